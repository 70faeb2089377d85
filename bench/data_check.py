"""Benchmark: the data check (New run form, `python -m training.engine CONFIG --check`) on 10,000 demo pairs.

The pairs are the demo's own (labeling/demo/*.jsonl, as the demo snapshot exports them: conversational TRL
rows), repeated with fresh ids up to `--pairs` and split 80/20 into a train and an eval file. Measured, best
of `--repeat` runs, with the demo model's tokenizer (`manage.py prepare_demo_model`) at the New run form's
max_length:
- `check`: `training.engine.check_data` in this process: the tokenizer loaded (no weights) and every pair
  rendered, tokenized, checked against its text and summarised. Target: under 10 s.
- `command`: the same through `python -m training.engine CONFIG --check --json` in a child process, which
  is what the web request waits for (interpreter, torch and transformers start-up included). For information.
Also reports the machine's speed (`python_loop_ms`) so a slow machine can be told from slow code.

Run: `.venv/bin/python bench/data_check.py [--pairs 10000] [--repeat 3] [--out PATH]`.
Writes JSON to var/bench/data_check.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.agreement import best_of, python_loop_ms  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.engine import check_data  # noqa: E402

TARGET_S = 10.0
MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"
DEMO = ROOT / "labeling" / "demo"


def demo_rows() -> list[dict]:
    """The demo's pairs as conversational TRL rows (what its snapshot holds)."""
    rows = []
    for record in (json.loads(line) for path in sorted(DEMO.glob("*.jsonl")) for line in path.open()):
        prompt = record["prompt"]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        chosen = record.get("chosen", record.get("response_a"))
        rejected = record.get("rejected", record.get("response_b"))
        rows.append({"prompt": messages, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})  # fmt: skip
    return rows


def write_files(folder: Path, pairs: int) -> tuple[Path, Path]:
    rows = demo_rows()
    every = [{"id": f"pair-{i}", **rows[i % len(rows)]} for i in range(pairs)]
    cut = int(pairs * 0.8)
    files = folder / "train.jsonl", folder / "eval.jsonl"
    for path, part in zip(files, (every[:cut], every[cut:]), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "data_check.json")
    args = parser.parse_args()
    if not MODEL.is_dir():
        sys.exit(f"{MODEL} is missing: run `python manage.py prepare_demo_model` first.")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefstudio.settings")
    import django

    django.setup()
    from training.forms import RunForm

    max_length = RunForm.base_fields["max_length"].initial
    config = TrainConfig(base_model=str(MODEL), max_length=max_length)
    with tempfile.TemporaryDirectory() as folder:
        train, evaluation = write_files(Path(folder), args.pairs)
        speed = python_loop_ms()
        check_s, check = best_of(
            args.repeat, lambda: check_data(config, train_file=train, eval_file=evaluation)
        )
        spec = Path(folder) / "config.json"
        spec.write_text(
            json.dumps({"train_file": str(train), "eval_file": str(evaluation), **config.to_dict()})
        )
        command = [sys.executable, "-m", "training.engine", str(spec), "--check", "--json"]
        command_s, _ = best_of(
            args.repeat, lambda: subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
        )
    splits = check["splits"]
    result = {
        "benchmark": "data_check",
        "pairs": args.pairs,
        "max_length": max_length,
        "kept": {name: s["kept"] for name, s in splits.items()},
        "dropped": {name: s["dropped_counts"] for name, s in splits.items()},
        "changed": {name: s["changed_counts"] for name, s in splits.items()},
        "check_seconds": round(check_s, 2),
        "command_seconds": round(command_s, 2),
        "target_seconds": TARGET_S,
        "pass": check_s < TARGET_S,
        "python_loop_ms": speed,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"data check of {args.pairs} pairs at max_length {max_length}: {check_s:.2f} s in process "
          f"(target {TARGET_S:.0f} s: {verdict}), {command_s:.2f} s as a command; "
          f"python loop {speed} ms")  # fmt: skip
    print(json.dumps({k: result[k] for k in ("kept", "dropped", "changed")}))


if __name__ == "__main__":
    main()
